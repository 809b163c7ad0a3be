NR == 1 { print "hello " $0; print "err" > "/dev/stderr"; exit 3 }
