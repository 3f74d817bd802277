namespace HelloSandbox;

/// <summary>The sample's library: small on purpose; the interesting part is where its tests run.</summary>
public static class Calculator
{
    public static int Add(int a, int b) => checked(a + b);

    public static int Divide(int dividend, int divisor) =>
        divisor == 0 ? throw new DivideByZeroException("divisor is zero") : dividend / divisor;

    /// <summary>"Hello, NAME!", or "Hello, world!" for a blank name.</summary>
    public static string Greet(string? name) =>
        $"Hello, {(string.IsNullOrWhiteSpace(name) ? "world" : name.Trim())}!";
}
