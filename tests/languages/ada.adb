with Ada.Text_IO; use Ada.Text_IO;
with Ada.Command_Line;
procedure Main is
   Line : constant String := Get_Line;
begin
   Put_Line ("hello " & Line);
   Put_Line (Standard_Error, "err");
   Ada.Command_Line.Set_Exit_Status (3);
end Main;
