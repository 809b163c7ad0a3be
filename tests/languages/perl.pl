my $name = <STDIN>;
chomp $name;
print "hello $name\n";
print STDERR "err\n";
exit 3;
