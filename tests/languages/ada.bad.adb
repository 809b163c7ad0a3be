procedure Main is
begin
   Put_Line (
