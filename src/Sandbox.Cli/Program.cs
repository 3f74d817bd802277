using System.CommandLine;
using System.Runtime.InteropServices;

namespace Sandbox.Cli;

internal static class Program
{
    public static int Main(string[] args)
    {
        var run = new RunCommand();
        var check = new CheckCommand();
        var root = new RootCommand("Sandbox: run commands, above all `dotnet test`, in rootless Linux sandboxes.")
        {
            run,
            check,
        };

        // `run` stops parsing its own options at the command (docker's rule), so split first.
        if (args.Length > 0 && args[0] == "run" && !args.Skip(1).TakeWhile(a => a != "--").Any(a => a is "-h" or "--help" or "-?"))
        {
            var (own, command) = run.Split(args.Skip(1).ToList());
            ParseResult parse = root.Parse(["run", .. own]);
            if (parse.Errors.Count > 0)
                return parse.Invoke();
            return RunSandbox(run, parse, command);
        }
        return root.Parse(args).Invoke();
    }

    private static int RunSandbox(RunCommand run, ParseResult parse, System.Collections.Immutable.ImmutableArray<string> command)
    {
        IEventRenderer renderer;
        try
        {
            renderer = run.EventsFormat(parse) == "json" ? new JsonLinesRenderer() : new ConsoleRenderer(run.Stats(parse));
        }
        catch (SandboxException e)
        {
            Console.Error.WriteLine($"sandbox: {e.Message}");
            return e.ExitCode;
        }

        using (renderer)
        {
            try
            {
                SandboxSpec spec = run.BuildSpec(parse, command);
                using SandboxExecution execution = SandboxRunner.Start(spec);
                // Signals to us go to the payload (docker's --sig-proxy): it decides how to end.
                var registrations = new List<PosixSignalRegistration>();
                foreach (int signal in new[] { 1, 2, 3, 10, 12, 15 })
                {
                    registrations.Add(PosixSignalRegistration.Create((PosixSignal)signal, context =>
                    {
                        context.Cancel = true;
                        execution.Signal(signal);
                    }));
                }
                try
                {
                    return Consume(execution, renderer).GetAwaiter().GetResult();
                }
                finally
                {
                    foreach (var r in registrations)
                        r.Dispose();
                }
            }
            catch (SandboxException e)
            {
                renderer.RenderFailure(e);
                return e.ExitCode;
            }
        }
    }

    private static async Task<int> Consume(SandboxExecution execution, IEventRenderer renderer)
    {
        int exitCode = ExitCodes.SandboxFailed;
        await foreach (SandboxEvent e in execution.Events.ConfigureAwait(false))
        {
            renderer.Render(e);
            if (e is ExitedEvent exited)
                exitCode = exited.Result.ExitCode;
        }
        return exitCode;
    }
}
