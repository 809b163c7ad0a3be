program main
  character(len=64) :: name
  read(*, '(A)') name
  print '(A)', 'hello ' // trim(name)
  write(0, '(A)') 'err'
  call exit(3)
end program main
