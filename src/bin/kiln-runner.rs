//! `kiln-runner`: runs one job. `kiln-runner pod` is what a local standby pod's pid 1 executes;
//! `kiln-runner run [--json]` takes one job on stdin and prints its outcome.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(kiln::runner::main(&args));
}
