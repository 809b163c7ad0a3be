name = IO.gets("") |> String.trim()
IO.puts("hello #{name}")
IO.puts(:stderr, "err")
System.halt(3)
