fun main() {
    val name = readln()
    println("hello $name")
    System.err.println("err")
    kotlin.system.exitProcess(3)
}
