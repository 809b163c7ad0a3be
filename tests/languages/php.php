<?php
$name = trim(fgets(STDIN));
echo "hello $name\n";
fwrite(STDERR, "err\n");
exit(3);
