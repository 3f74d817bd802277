using Sandbox.Runtime;

namespace Sandbox.Tests.Runtime;

/// <summary>
/// StableHash names files that outlive a process (the store's name hints, the holder's socket), so it
/// must be FNV-1a as published and never change with the runtime: the reference values of the FNV
/// test suite (ASCII text, one byte per code unit).
/// </summary>
public class StableHashTests
{
    [TestCase("", 0xcbf29ce484222325UL)]
    [TestCase("a", 0xaf63dc4c8601ec8cUL)]
    [TestCase("foobar", 0x85944171f73967e8UL)]
    public void IsFnv1a64(string text, ulong expected) =>
        Assert.That(StableHash.Fnv1a(text), Is.EqualTo(expected));
}
