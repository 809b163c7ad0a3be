using System;
class Program {
    static int Main() {
        string name = Console.ReadLine();
        Console.WriteLine("hello " + name);
        Console.Error.WriteLine("err");
        return 3;
    }
}
