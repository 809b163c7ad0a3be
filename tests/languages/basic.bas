rem yabasic writes to stderr only through its own error messages: stdout and the exit code here.
line input "" name$
print "hello " + name$
exit 3
