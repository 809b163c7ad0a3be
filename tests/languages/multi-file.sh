read -r name
echo "hello $name"
echo err >&2
exit 3
