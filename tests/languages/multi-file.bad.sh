# A run script that does not parse.
echo "unclosed
if then fi (
