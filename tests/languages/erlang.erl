-module(main).
-export([main/0]).
main() ->
    Line = io:get_line(""),
    Name = string:trim(Line),
    io:format("hello ~s~n", [Name]),
    io:format(standard_error, "err~n", []),
    halt(3).
