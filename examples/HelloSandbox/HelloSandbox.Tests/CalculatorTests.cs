namespace HelloSandbox.Tests;

public class CalculatorTests
{
    [Test]
    public void AddsNumbers() => Assert.That(Calculator.Add(2, 3), Is.EqualTo(5));

    [Test]
    public void DivisionByZeroThrows() =>
        Assert.That(() => Calculator.Divide(1, 0), Throws.InstanceOf<DivideByZeroException>());

    [TestCase("Ada", "Hello, Ada!")]
    [TestCase("  ", "Hello, world!")]
    [TestCase(null, "Hello, world!")]
    public void Greets(string? name, string expected) => Assert.That(Calculator.Greet(name), Is.EqualTo(expected));
}
