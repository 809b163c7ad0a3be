import sys
name = input()
print("hello " + name)
print("err", file=sys.stderr)
sys.exit(3)
