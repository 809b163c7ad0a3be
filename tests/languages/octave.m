name = fgetl(stdin);
printf("hello %s\n", name);
fprintf(stderr, "err\n");
exit(3);
