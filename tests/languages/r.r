name <- readLines(file("stdin"), n = 1)
cat("hello ", name, "\n", sep = "")
write("err", stderr())
quit(status = 3)
