using NUnit.Framework;
using Sandbox.Cgroups;

namespace Sandbox.Tests.Cgroups;

public class MountinfoUnescapeTests
{
    [TestCase("/sys/fs/cgroup", "/sys/fs/cgroup")]
    [TestCase(@"/mnt/with\040space", "/mnt/with space")]
    [TestCase(@"/a\011tab\012nl", "/a\ttab\nnl")]
    [TestCase(@"/back\134slash", @"/back\slash")]
    [TestCase(@"/short\04", @"/short\04")]
    [TestCase(@"/not\999octal", @"/not\999octal")]
    [TestCase(@"\040\040", "  ")]
    public void OctalEscapesAreDecodedAsTheKernelWritesThem(string escaped, string expected) =>
        Assert.That(CgroupManager.Unescape(escaped), Is.EqualTo(expected));
}
