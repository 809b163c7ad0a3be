let name = stdin.readLine()
echo "hello ", name
stderr.writeLine("err")
quit(3)
