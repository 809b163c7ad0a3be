let x: number = "a";
