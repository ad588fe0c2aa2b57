"""The reference system's example function: a recursive Fibonacci program.

Run as `python3 fib.py N`; prints one sentence with the N-th Fibonacci number,
or a usage line when N is missing or not an integer. Publish it with
`addfaas --name faas examples/fib.py` (detected as script style).
"""
import sys


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def main():
    try:
        n = int(sys.argv[1])
    except (IndexError, ValueError):
        print("Usage: python3 function.py <integer n>  (prints the n-th Fibonacci number)")
        return
    print("The Fibonacci number of %d is %d" % (n, fib(n)))


if __name__ == "__main__":
    main()
