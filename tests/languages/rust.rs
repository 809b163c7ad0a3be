use std::io::BufRead;
fn main() {
    let mut name = String::new();
    std::io::stdin().lock().read_line(&mut name).unwrap();
    println!("hello {}", name.trim());
    eprintln!("err");
    std::process::exit(3);
}
