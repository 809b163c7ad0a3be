import std.stdio;
import std.string;
int main() {
    string name = readln().chomp;
    writeln("hello ", name);
    stderr.writeln("err");
    return 3;
}
