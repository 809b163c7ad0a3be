main = putStrLn (
