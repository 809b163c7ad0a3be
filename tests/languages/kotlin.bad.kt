fun main() { val x = }
