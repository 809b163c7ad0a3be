#import <objc/Object.h>
#include <stdio.h>
#include <string.h>

@interface Greeter : Object
+ (void)greet:(const char *)name;
@end

@implementation Greeter
+ (void)greet:(const char *)name {
    printf("hello %s\n", name);
}
@end

int main(void) {
    char name[256];
    if (!fgets(name, sizeof name, stdin)) return 1;
    name[strcspn(name, "\n")] = 0;
    [Greeter greet:name];
    fprintf(stderr, "err\n");
    return 3;
}
