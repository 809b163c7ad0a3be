#lang racket/base
(define name (read-line))
(printf "hello ~a\n" name)
(eprintf "err\n")
(exit 3)
