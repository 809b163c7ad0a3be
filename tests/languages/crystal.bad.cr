puts "a" +
