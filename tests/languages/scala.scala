// Scala 3: a top-level @main method runs as the class of its name.
@main def hello(): Unit =
  val name = scala.io.StdIn.readLine()
  println("hello " + name)
  System.err.println("err")
  System.exit(3)
