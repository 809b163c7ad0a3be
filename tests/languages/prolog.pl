:- initialization(main).
main :-
    read_line_to_string(user_input, Name),
    format("hello ~w~n", [Name]),
    format(user_error, "err~n", []),
    halt(3).
