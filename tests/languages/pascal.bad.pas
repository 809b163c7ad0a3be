program Main;
begin
  WriteLn(
end.
