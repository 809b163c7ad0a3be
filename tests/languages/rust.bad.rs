fn main() { let x = }
