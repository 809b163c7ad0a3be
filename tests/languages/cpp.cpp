#include <iostream>
#include <string>
int main() {
    std::string name;
    std::getline(std::cin, name);
    std::cout << "hello " << name << std::endl;
    std::cerr << "err" << std::endl;
    return 3;
}
