gets stdin name
puts "hello $name"
puts stderr "err"
exit 3
