program Main;
var name: string;
begin
  ReadLn(name);
  WriteLn('hello ', name);
  WriteLn(StdErr, 'err');
  Halt(3);
end.
