using Sandbox.Rootfs;

namespace Sandbox.Tests.TestSupport;

/// <summary>A fresh directory under the system temp directory, removed on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        string created = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "sandbox-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(created);
        // The real path (no symlinks), as the planner sees it.
        Path = HostPaths.Resolve(System.IO.Path.GetFullPath(created));
    }

    public string Path { get; }

    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public string CreateDirectory(params string[] parts)
    {
        string dir = Combine(parts);
        Directory.CreateDirectory(dir);
        return dir;
    }

    public string CreateFile(string relative, string content = "")
    {
        string file = Combine(relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(file)!);
        File.WriteAllText(file, content);
        return file;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
