let x = 
