package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

func main() {
	name, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	fmt.Println("hello " + strings.TrimSpace(name))
	fmt.Fprintln(os.Stderr, "err")
	os.Exit(3)
}
