// Known-answer vectors from java.util.Random: for each seed x, the first five nextInt() values
// of new Random(x). known_answers.rs compiles and runs this with javac/java and compares them
// with seedq's java_lcg seeded with (x ^ 0x5DEECE66D) & (2^48 - 1). Output: `x : v0 .. v4` with
// v as unsigned 32-bit decimals.
import java.util.Random;

public class JavaRandomKat {
    public static void main(String[] args) {
        long[] seeds = {0L, 1L, 42L, -1L, 123456789012345L, Long.MIN_VALUE, 0x5DEECE66DL};
        for (long x : seeds) {
            Random r = new Random(x);
            StringBuilder sb = new StringBuilder();
            sb.append(Long.toUnsignedString(x)).append(" :");
            for (int i = 0; i < 5; i++) {
                sb.append(' ').append(Integer.toUnsignedString(r.nextInt()));
            }
            System.out.println(sb);
        }
    }
}
