program main
  print *, 
end program main
