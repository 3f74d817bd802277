using System.Diagnostics;

namespace Sandbox.Tests.TestSupport;

/// <summary>Runs a program to its end (a minute at most) for the tests that build and run C probes.</summary>
internal static class ChildProcess
{
    /// <returns>Its exit code and output; 124 when it timed out (and was killed), -1 when it could not be started.</returns>
    public static (int Exit, string Stdout, string Stderr) Run(string file, IEnumerable<string> args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
            start.ArgumentList.Add(a);
        try
        {
            using Process process = Process.Start(start)!;
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
            {
                process.Kill(entireProcessTree: true);
                return (124, "", "timed out");
            }
            return (process.ExitCode, stdout.Result, stderr.Result);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, "", e.Message);
        }
    }
}
