//! `kiln-runner`: runs one job. `kiln-runner pod` is what a local standby pod's pid 1 executes;
//! `kiln-runner run [--json]` takes one job on stdin and prints its outcome.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("pod") => kiln::runner::pod::serve_pod(),
        Some("run") => kiln::runner::pod::run_direct(args.iter().any(|a| a == "--json")),
        _ => {
            eprintln!("usage: kiln-runner run [--json] < job    (one job on stdin, its outcome on stdout)");
            eprintln!("       kiln-runner pod                  (pid 1 of a local standby pod; started by kiln)");
            2
        }
    };
    std::process::exit(code);
}
