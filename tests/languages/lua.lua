local name = io.read("l")
print("hello " .. name)
io.stderr:write("err\n")
os.exit(3)
