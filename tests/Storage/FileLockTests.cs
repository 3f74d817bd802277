using System.Diagnostics;
using NUnit.Framework;
using Sandbox.Storage;

namespace Sandbox.Tests.Storage;

/// <summary>flock(2) locks: conflicts between open file descriptions, and the bounded wait.</summary>
public class FileLockTests
{
    [Test]
    public void TryAcquireWithAWaitGivesUpAfterItAndSucceedsOnceTheHolderLetsGo()
    {
        string dir = Directory.CreateTempSubdirectory("lock-").FullName;
        try
        {
            string path = Path.Combine(dir, "l.lock");
            using (FileLock held = FileLock.Acquire(path, exclusive: true))
            {
                var sw = Stopwatch.StartNew();
                Assert.That(FileLock.TryAcquire(path, exclusive: true, TimeSpan.FromMilliseconds(60)), Is.Null);
                Assert.That(sw.ElapsedMilliseconds, Is.GreaterThanOrEqualTo(50), "it waited");
                Assert.That(FileLock.TryAcquire(path, exclusive: false), Is.Null, "shared conflicts with exclusive");
            }
            using FileLock? again = FileLock.TryAcquire(path, exclusive: true, TimeSpan.FromMilliseconds(60));
            Assert.That(again, Is.Not.Null);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
