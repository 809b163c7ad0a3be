def name = System.in.newReader().readLine()
println "hello ${name}"
System.err.println "err"
System.exit(3)
