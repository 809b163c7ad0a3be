; Reads a line from stdin, writes "hello <line>" to stdout and "err" to stderr, exits 3.
section .bss
buf: resb 256
section .data
hello: db "hello "
err: db "err", 10
section .text
global _start
_start:
    mov rax, 0          ; read(0, buf, 256)
    mov rdi, 0
    mov rsi, buf
    mov rdx, 256
    syscall
    mov r12, rax
    mov rax, 1          ; write(1, "hello ", 6)
    mov rdi, 1
    mov rsi, hello
    mov rdx, 6
    syscall
    mov rax, 1          ; write(1, buf, n)
    mov rdi, 1
    mov rsi, buf
    mov rdx, r12
    syscall
    mov rax, 1          ; write(2, "err\n", 4)
    mov rdi, 2
    mov rsi, err
    mov rdx, 4
    syscall
    mov rax, 60         ; exit(3)
    mov rdi, 3
    syscall
