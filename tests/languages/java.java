import java.io.BufferedReader;
import java.io.InputStreamReader;

public class Main {
    public static void main(String[] args) throws Exception {
        String name = new BufferedReader(new InputStreamReader(System.in)).readLine();
        System.out.println("hello " + name);
        System.err.println("err");
        System.exit(3);
    }
}
