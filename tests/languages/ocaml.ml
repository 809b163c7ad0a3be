let () =
  let name = input_line stdin in
  print_endline ("hello " ^ name);
  prerr_endline "err";
  exit 3
