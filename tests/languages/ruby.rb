name = gets.chomp
puts "hello #{name}"
$stderr.puts "err"
exit 3
