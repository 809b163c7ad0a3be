name = gets.not_nil!.chomp
puts "hello #{name}"
STDERR.puts "err"
exit 3
