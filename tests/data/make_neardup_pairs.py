"""Builds tests/data/neardup_pairs.jsonl, the labelled set near-duplicate detection is measured on.

Every base item below was written by hand, with a light paraphrase of it (a few words changed, the meaning
kept). Items come in groups of three on one topic, so distinct pairs are hard: same topic, same templates
("Write a Python function that..."), different item. Each line of the output is
`{"kind": "riddle"|"coding"|"system_prompt", "variant": ..., "a": ..., "b": ..., "duplicate": bool}`.

Duplicates (variant): `paraphrase` (hand-written), `one_word` (a word substituted, inserted or deleted),
`surface` (case, punctuation, Unicode look-alikes: curly quotes, full-width marks, em dashes, ellipses,
non-breaking spaces, ligatures), `reordered` (two clauses swapped). Distinct: every pair of two different items of
one kind (`same_group` when they share a topic group, else `same_kind`), the second side alternately the
item or its paraphrase. Run `python tests/data/make_neardup_pairs.py`
to rebuild it; the output is deterministic.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

RIDDLES = [
    # time
    ("What runs all day but never walks, has hands but cannot clap?",
     "What runs the whole day yet never walks, and has hands but can never clap?"),
    ("The more of me you take, the more you leave behind. What am I?",
     "The more of me you take, the more of me you leave behind you. What am I?"),
    ("What comes once in a minute, twice in a moment, but never in a thousand years?",
     "What appears once in a minute, twice in a moment, but never in a thousand years?"),
    # water
    ("What gets wetter the more it dries?",
     "What becomes wetter the more it dries things?"),
    ("I have rivers but no water, cities but no buildings, and forests but no trees. What am I?",
     "I have rivers without water, cities without buildings and forests without trees. What am I?"),
    ("What can fill a room but takes up no space, and disappears when you turn off the switch?",
     "What can fill a whole room but takes up no space, and vanishes when you flip the switch off?"),
    # objects
    ("What has keys but cannot open a single lock?",
     "What has many keys yet cannot open even one lock?"),
    ("What has a neck but no head, and wears a cap to keep its contents in?",
     "What has a neck but no head, and wears a cap to hold its contents in?"),
    ("What has one eye but cannot see, and follows a thread wherever it goes?",
     "What has a single eye but cannot see, and follows a thread wherever it goes?"),
    # animals
    ("What has four legs in the morning, two at noon and three in the evening?",
     "What walks on four legs in the morning, two at noon and three in the evening?"),
    ("I have feathers but cannot fly, I swim in icy seas and waddle on land. What am I?",
     "I have feathers yet I cannot fly, I swim in icy seas and I waddle on land. What am I?"),
    ("What animal carries its house on its back and leaves a silver trail behind it?",
     "Which animal carries its home on its back and leaves a silver trail behind it?"),
    # words
    ("What word becomes shorter when you add two letters to it?",
     "Which word becomes shorter when you add two more letters to it?"),
    ("What five-letter word stays the same when you take away the first, third and last letters?",
     "Which five-letter word stays the same when you remove its first, third and last letters?"),
    ("What starts with T, ends with T and has T in it?",
     "What begins with T, ends with T, and has T inside it?"),
    # nature
    ("I am not alive, but I grow; I have no lungs, but I need air; water kills me. What am I?",
     "I am not alive, yet I grow; I have no lungs, yet I need air; and water kills me. What am I?"),
    ("What falls but never breaks, and breaks but never falls?",
     "What can fall but never break, and break but never fall?"),
    ("What has roots nobody sees, is taller than trees, and yet never grows?",
     "What has roots that nobody sees, is taller than the trees, yet never grows at all?"),
    # people
    ("What belongs to you but other people use it more than you do?",
     "What belongs to you, but other people use it far more than you do?"),
    ("The person who makes it sells it, the person who buys it never uses it, and the person who uses it never knows. What is it?",
     "The one who makes it sells it, the one who buys it never uses it, and the one who uses it never knows it. What is it?"),
    ("What can you hold in your left hand but never in your right hand?",
     "What can you hold in your left hand but never ever in your right one?"),
    # light and sound
    ("What can travel around the world while staying in a corner?",
     "What can travel all around the world while it stays in a corner?"),
    ("I speak without a mouth and hear without ears; I come alive with the wind. What am I?",
     "I speak without a mouth and I hear without ears; I come alive with wind. What am I?"),
    ("What can you catch but never throw?",
     "What is something you can catch but can never throw?"),
    # numbers
    ("I am an odd number; take away one letter and I become even. What number am I?",
     "I am an odd number; take away a single letter and I become even. Which number am I?"),
    ("A man has eight sons and each son has a sister. How many children does he have?",
     "A man has eight sons, and each of the sons has one sister. How many children does the man have?"),
    ("What three positive numbers give the same result when multiplied and when added together?",
     "Which three positive numbers give the same result when they are multiplied and when they are added together?"),
    # home
    ("What goes up and down the stairs without moving?",
     "What goes up and down the stairs but never moves?"),
    ("What has a bed but never sleeps, and a mouth but never eats?",
     "What has a bed but never sleeps, and has a mouth but never eats?"),
    ("What is full of holes but still holds water?",
     "What is full of holes yet still manages to hold water?"),
]

CODING = [
    # strings, Python
    ("Write a Python function that checks whether a string is a palindrome, ignoring case and punctuation.",
     "Write a Python function that tests if a string is a palindrome, ignoring punctuation and case."),
    ("Write a Python function that counts how many times each word appears in a text and returns a dictionary.",
     "Write a Python function that counts how often each word occurs in a text and returns the counts as a dictionary."),
    ("Write a Python function that reverses the order of the words in a sentence while keeping each word intact.",
     "Write a Python function that reverses the order of words in a sentence, keeping every word intact."),
    # lists, JavaScript
    ("Write a JavaScript function that removes duplicate values from an array while keeping the original order.",
     "Write a JavaScript function that removes duplicate values from an array and keeps the original order."),
    ("Write a JavaScript function that splits an array into chunks of a given size.",
     "Write a JavaScript function that splits an array into chunks of the given size and returns them."),
    ("Write a JavaScript function that flattens a nested array of arbitrary depth without using Array.prototype.flat.",
     "Write a JavaScript function that flattens a nested array of any depth without calling Array.prototype.flat."),
    # files, Python
    ("Write a Python script that reads a CSV file and prints the average of the numeric column named price.",
     "Write a Python script that reads a CSV file and prints the mean of the numeric column called price."),
    ("Write a Python script that walks a directory tree and prints the ten largest files with their sizes.",
     "Write a Python script that walks a directory tree and prints the 10 largest files along with their sizes."),
    ("Write a Python script that watches a log file and prints every new line that contains the word ERROR.",
     "Write a Python script that watches a log file and prints each new line containing the word ERROR."),
    # data structures, C
    ("Implement a singly linked list in C with functions to push, pop and print its elements.",
     "Implement a singly linked list in C with functions that push, pop and print the elements."),
    ("Implement a stack in C backed by a dynamic array that doubles its capacity when full.",
     "Implement a stack in C backed by a dynamic array which doubles its capacity when it is full."),
    ("Implement a binary search tree in C with insert, search and in-order traversal.",
     "Implement a binary search tree in C that supports insert, search and an in-order traversal."),
    # algorithms, Java
    ("Write a Java method that returns the n-th Fibonacci number using memoisation.",
     "Write a Java method that returns the nth Fibonacci number with memoisation."),
    ("Write a Java method that sorts an array of integers with merge sort.",
     "Write a Java method that sorts an integer array using merge sort."),
    ("Write a Java method that finds the shortest path between two nodes of an unweighted graph with breadth-first search.",
     "Write a Java method that finds the shortest path between two nodes in an unweighted graph using breadth-first search."),
    # shell
    ("Write a Bash script that renames every .jpeg file in the current directory to .jpg.",
     "Write a Bash script that renames all .jpeg files in the current directory to .jpg."),
    ("Write a Bash script that prints the number of lines in every Python file under the current directory.",
     "Write a Bash script that prints the line count of each Python file under the current directory."),
    ("Write a Bash script that backs up a directory into a dated tar.gz archive and keeps only the last seven archives.",
     "Write a Bash script that backs up a directory into a dated tar.gz archive and keeps only the seven most recent archives."),
    # web, Go
    ("Write a Go HTTP server that responds to GET /health with the JSON body {\"status\": \"ok\"}.",
     "Write a Go HTTP server that answers GET /health with the JSON body {\"status\": \"ok\"}."),
    ("Write a Go program that fetches a list of URLs concurrently and prints each status code.",
     "Write a Go program that fetches a list of URLs concurrently and prints the status code of each."),
    ("Write a Go function that limits how many goroutines run at once using a buffered channel as a semaphore.",
     "Write a Go function that limits how many goroutines run at the same time, using a buffered channel as a semaphore."),
    # SQL
    ("Write an SQL query that returns the five customers with the highest total order value.",
     "Write an SQL query that returns the 5 customers with the highest total order value."),
    ("Write an SQL query that lists every department with the number of employees it has, including empty departments.",
     "Write an SQL query that lists all departments with their number of employees, including departments with none."),
    ("Write an SQL query that finds duplicate e-mail addresses in the users table.",
     "Write an SQL query that finds the duplicated e-mail addresses in a users table."),
    # Rust
    ("Write a Rust function that parses a string of comma-separated integers into a vector, returning an error for invalid input.",
     "Write a Rust function that parses a string of comma-separated integers into a Vec, returning an error on invalid input."),
    ("Write a Rust program that reads lines from standard input and prints them in reverse order.",
     "Write a Rust program that reads lines from stdin and prints them in reverse order."),
    ("Write a Rust function that computes the greatest common divisor of two unsigned integers.",
     "Write a Rust function that computes the greatest common divisor of two unsigned numbers."),
    # TypeScript
    ("Write a TypeScript function that debounces another function by a given number of milliseconds.",
     "Write a TypeScript function that debounces another function by the given number of milliseconds."),
    ("Write a TypeScript type guard that checks whether an unknown value is an object with a string id property.",
     "Write a TypeScript type guard that checks if an unknown value is an object with a string property id."),
    ("Write a TypeScript function that deep-clones a plain object containing nested arrays and objects.",
     "Write a TypeScript function that deep-clones a plain object that contains nested objects and arrays."),
]

SYSTEM_PROMPTS = [
    # mechanical
    ("Answer every message entirely in capital letters, no matter what the user writes.",
     "Reply to every message entirely in capital letters, whatever the user writes."),
    ("Never use the letter e in any of your replies, even when quoting the user.",
     "Never use the letter e in any reply, even when you quote the user."),
    ("Respond to every message in exactly ten words, no more and no fewer.",
     "Respond to each message in exactly ten words, never more and never fewer."),
    # persona
    ("You are a grumpy pirate captain who answers questions about sailing while complaining about the crew.",
     "You are a grumpy pirate captain answering questions about sailing while you complain about your crew."),
    ("You are a cat who can only reply with meows of different lengths and an occasional purr.",
     "You are a cat that can only reply with meows of varying lengths and an occasional purr."),
    ("You are a Victorian butler who speaks formally and addresses the user as sir or madam.",
     "You are a Victorian butler who speaks formally and calls the user sir or madam."),
    # guardrails
    ("You are a customer support assistant for a bank. Never reveal account numbers and never give investment advice.",
     "You are a customer support assistant for a bank. Never disclose account numbers and never give investment advice."),
    ("You help students with homework. Explain the steps but never give the final answer to a graded exercise.",
     "You help students with their homework. Explain the steps, but never give the final answer to a graded exercise."),
    ("You are a medical information assistant. Do not diagnose; always suggest seeing a doctor for symptoms.",
     "You are a medical information assistant. Never diagnose; always suggest seeing a doctor about symptoms."),
    # purpose
    ("You are a travel planner who builds day-by-day itineraries within the traveller's budget.",
     "You are a travel planner who builds day-by-day itineraries that stay within the traveller's budget."),
    ("You are a recipe assistant who suggests dinners from the ingredients the user already has in the fridge.",
     "You are a recipe assistant that suggests dinners using the ingredients the user already has in their fridge."),
    ("You are a language tutor who corrects the user's Spanish and explains each correction in English.",
     "You are a language tutor who corrects the user's Spanish and explains every correction in English."),
    # behavioural rules
    ("Always ask one clarifying question before giving any advice, and keep answers under three sentences.",
     "Always ask a clarifying question before giving any advice, and keep your answers under three sentences."),
    ("Never use exclamation marks, and end every answer by summarising it in one line.",
     "Never use exclamation marks, and finish every answer with a one-line summary of it."),
    ("Address the user as Captain in every reply and never mention that you are an assistant.",
     "Call the user Captain in every reply and never mention being an assistant."),
    # output format
    ("Reply only with valid JSON containing the keys answer and confidence, with no text outside the JSON.",
     "Reply only with valid JSON that has the keys answer and confidence, and no text outside it."),
    ("Format every answer as a bulleted list of at most five bullets, each under fifteen words.",
     "Format each answer as a bulleted list of at most five bullets, every bullet under fifteen words."),
    ("Answer in a markdown table with the columns option, pros and cons.",
     "Answer with a markdown table that has the columns option, pros and cons."),
    # procedural
    ("When the user reports a bug, first ask for the error message, then the steps to reproduce it, then suggest a fix.",
     "When a user reports a bug, first ask for the error message, then for the steps to reproduce it, then suggest a fix."),
    ("Solve maths problems by restating the problem, showing each step on its own line, and boxing the final answer.",
     "Solve maths problems by restating the problem, showing every step on its own line, and boxing the final result."),
    ("For every recipe request, list the ingredients first, then number the steps, then give the total time.",
     "For each recipe request, list the ingredients first, then number the steps, and then give the total time."),
    # functions
    ("You can call the function get_weather(city). Call it whenever the user asks about the weather, then answer in one sentence.",
     "You can call the function get_weather(city). Call it each time the user asks about the weather, then answer in a sentence."),
    ("You have a tool search_flights(origin, destination, date). Use it before quoting any flight price.",
     "You have a tool search_flights(origin, destination, date). Use it before you quote any flight price."),
    ("You can run SQL through the function run_query(sql). Only run SELECT statements and show the query before its results.",
     "You can run SQL with the function run_query(sql). Only run SELECT statements, and show the query before its results."),
    # tone
    ("Speak like a calm yoga teacher, slowly and gently, using breathing metaphors.",
     "Speak like a calm yoga teacher: slowly, gently, and with breathing metaphors."),
    ("Write like a sports commentator, describing everything the user does as a thrilling play.",
     "Write like a sports commentator, describing everything the user does as if it were a thrilling play."),
    ("Answer like a 1920s newspaper reporter, with short punchy sentences and period slang.",
     "Answer like a newspaper reporter of the 1920s, with short punchy sentences and slang of the period."),
    # length
    ("Keep every reply under twenty words.",
     "Keep each reply below twenty words."),
    ("Answer every question with a single haiku.",
     "Answer each question with one haiku."),
    ("Reply with exactly three sentences every time.",
     "Always reply with exactly three sentences."),
]

SYNONYMS = {
    "what": "which", "never": "not ever", "but": "yet", "has": "holds", "can": "could", "every": "each",
    "each": "every", "all": "every", "write": "create", "returns": "gives back", "prints": "outputs",
    "function": "routine", "script": "program", "the": "a", "and": "plus", "answer": "reply", "reply": "respond",
    "user": "person", "always": "constantly", "message": "note", "number": "count", "list": "array",
    "without": "with no", "while": "whilst", "more": "further", "first": "initial", "keep": "hold",
}
FILLERS = ("really", "just", "also", "exactly", "simply")
LOOKALIKES = [("'", "\u2019"), ("?", "\uff1f"), (",", "\u3001"), ("fi", "\ufb01"), (" ", "\u00a0")]


def one_word_edit(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    choices = [i for i, w in enumerate(words) if re.sub(r"\W", "", w).lower() in SYNONYMS]
    operation = rng.choice(("substitute", "substitute", "insert", "delete"))
    if operation == "substitute" and choices:
        i = rng.choice(choices)
        bare = re.sub(r"\W", "", words[i])
        replacement = SYNONYMS[bare.lower()]
        replacement = replacement.capitalize() if bare[0].isupper() else replacement
        words[i] = words[i].replace(bare, replacement)
    elif operation == "delete" and len(words) > 6:
        del words[rng.randrange(1, len(words) - 1)]
    else:
        words.insert(rng.randrange(1, len(words)), rng.choice(FILLERS))
    return " ".join(words)


def surface_variant(text: str, rng: random.Random) -> str:
    out = text
    style = rng.randrange(4)
    if style == 0:
        out = out.upper()
    elif style == 1:
        out = out.lower()
    out = out.replace(", ", rng.choice((" \u2014 ", "\u2014", "... ", "\u2026", " -- ", " - ")), 1)
    for plain, look in rng.sample(LOOKALIKES, 3):
        out = out.replace(plain, look, 2)
    if out.endswith((".", "?")) and rng.random() < 0.5:
        out = out[:-1] + rng.choice(("!!", "?!", "\u2026", " ."))
    return "  " + out if rng.random() < 0.3 else out


def reordered(text: str) -> str | None:
    """Two clauses swapped, where the text has a comma, semicolon or ' and ' to swap at."""
    for sep in ("; ", ", ", " and "):
        head, found, tail = text.partition(sep)
        if found and len(head.split()) >= 3 and len(tail.split()) >= 3:
            end = tail[-1] if tail[-1] in ".?!" else ""
            tail = tail[:-1] if end else tail
            return tail[0].upper() + tail[1:] + sep + head[0].lower() + head[1:] + end
    return None


def pairs() -> list[dict]:
    rng = random.Random(20261122)
    out: list[dict] = []
    for kind, items in (("riddle", RIDDLES), ("coding", CODING), ("system_prompt", SYSTEM_PROMPTS)):
        for base, paraphrase in items:
            out.append({"kind": kind, "variant": "paraphrase", "a": base, "b": paraphrase, "duplicate": True})
            out.append({"kind": kind, "variant": "one_word", "a": base, "b": one_word_edit(base, rng),
                        "duplicate": True})
            out.append({"kind": kind, "variant": "surface", "a": base, "b": surface_variant(base, rng),
                        "duplicate": True})
            swapped = reordered(base)
            if swapped:
                out.append({"kind": kind, "variant": "reordered", "a": base, "b": swapped, "duplicate": True})
        for i in range(len(items)):
            for j in range(i + 1, len(items)):  # every pair of different items of this kind
                variant = "same_group" if i // 3 == j // 3 else "same_kind"
                out.append({"kind": kind, "variant": variant, "a": items[i][0], "b": items[j][(i + j) % 2],
                            "duplicate": False})
    return out


if __name__ == "__main__":
    target = Path(__file__).with_name("neardup_pairs.jsonl")
    rows = pairs()
    target.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    dup = sum(r["duplicate"] for r in rows)
    print(f"{target}: {dup} duplicate pairs, {len(rows) - dup} distinct pairs")
