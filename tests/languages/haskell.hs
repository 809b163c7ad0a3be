import System.IO
import System.Exit
main :: IO ()
main = do
  name <- getLine
  putStrLn ("hello " ++ name)
  hPutStrLn stderr "err"
  exitWith (ExitFailure 3)
