#include <stdio.h>
int main(void) {
    char name[256];
    if (!fgets(name, sizeof name, stdin)) return 1;
    printf("hello %s", name);
    fprintf(stderr, "err\n");
    return 3;
}
