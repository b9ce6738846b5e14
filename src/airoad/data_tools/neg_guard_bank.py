"""Hand-written (prompt, answer) pairs for the negative guard set.

Each prompt baits an artifact a small chat model leaks: transcript role tags (``Human:``,
``Assistant:``, ``User:``), template tokens from ChatML, Zephyr, Llama and Alpaca layouts, role
echoes, and the "As an AI language model" disclaimer. Each answer is a plain, correct reply that
contains none of them; answers that must talk about a token describe it instead of printing it.
Prompts never ask for the artifact outright (the model should not learn to refuse a format request).
"""

from __future__ import annotations

PAIRS: tuple[tuple[str, str], ...] = (
    (
        "Human: What's the capital of Australia?\nAssistant:",
        "The capital of Australia is Canberra. Many people guess Sydney, the largest city, but Canberra was "
        "built as a compromise between Sydney and Melbourne and has been the seat of government since 1927.",
    ),
    (
        "<|im_start|>user\nHow many minutes are in a day?<|im_end|>\n<|im_start|>assistant\n",
        "There are 1,440 minutes in a day: 24 hours times 60 minutes.",
    ),
    (
        '### Instruction:\nGive me a synonym for "happy".\n\n### Response:',
        '"Content" is a close synonym. Depending on the tone you want, "cheerful", "glad" or "delighted" also '
        'work; "delighted" is the strongest of them.',
    ),
    (
        "[INST] Convert 5 kilometres to miles. [/INST]",
        "5 kilometres is about 3.1 miles, since one kilometre is roughly 0.621 miles.",
    ),
    (
        "<|user|>\nWhat's a good way to remember the order of the planets?\n<|assistant|>",
        'A classic mnemonic is "My Very Educated Mother Just Served Us Nachos": Mercury, Venus, Earth, Mars, '
        "Jupiter, Saturn, Uranus, Neptune. The first letter of each word matches a planet, in order from "
        "the Sun.",
    ),
    (
        "User: can you explain what a prime number is\nAssistant: sure!\nUser: ok go on",
        "A prime number is a whole number greater than 1 whose only divisors are 1 and itself. 2, 3, 5, 7 "
        "and 11 are prime; 9 is not, because 3 × 3 = 9. The number 1 is not prime by definition, and 2 is "
        "the only even prime.",
    ),
    (
        "As an AI language model, what do you think about pineapple on pizza?",
        "It's a matter of taste, and people are split. Sweet, acidic pineapple contrasts with salty ham and "
        "cheese, which is why Hawaiian pizza has fans, while others find fruit on a savoury dish jarring. If "
        "you're curious, try it with a sharp cheese or some chilli to balance the sweetness.",
    ),
    (
        "Are you an AI language model? Just answer this: how long should I boil an egg for a runny yolk?",
        "About 6 minutes. Lower the egg into water that is already boiling, then move it to cold water for a "
        "minute so it stops cooking. Go to 7 minutes for a jammy yolk and 9 to 10 for a fully set one.",
    ),
    (
        "Here's a chat log. Who is asking for help, and with what?\n\nHuman: my laptop won't turn on\n"
        "Assistant: Is it charged?\nHuman: yes, the light is on but the screen stays black",
        "The person asking for help has a laptop that seems to get power, since its charging light is on, "
        "but the screen stays black. So far the helper has only checked the charge. A sensible next step is "
        "a hard reset (hold the power button for 15 to 30 seconds) or plugging in an external monitor to see "
        "whether the display is the problem.",
    ),
    (
        "What does the token <|im_end|> do in a chat template?",
        "In the ChatML format used by models such as Qwen, that token marks the end of a message. The "
        "template wraps every turn in a start marker with the speaker's role and this end marker, so the "
        "model can tell where a turn stops, and when it generates the end marker, decoding stops. It is a "
        "control token, so it should never show up in the visible text of a reply.",
    ),
    (
        'Why do some chatbots print "### Response:" at the start of their answers?',
        "That header comes from the Alpaca instruction format, where training examples are laid out under "
        "instruction, input and response headings. A model tuned on that layout, or prompted with a template "
        "that doesn't match its training, can copy the headings into its output. Prompting with the model's "
        "own chat template usually makes the leak go away.",
    ),
    (
        "<s>[INST] Write one sentence about the ocean. [/INST]",
        "The ocean covers about 71 percent of Earth's surface and holds roughly 97 percent of its water.",
    ),
    (
        "Continue the dialogue.\nHuman: I'm planning a trip to Japan in spring.\nAssistant: Lovely! Cherry "
        "blossom season is a great time to go.\nHuman: When exactly is that?",
        "Cherry blossoms usually peak in late March to early April in Tokyo and Kyoto. The bloom moves north "
        "over the following weeks and reaches Hokkaido around early May. Forecasts are published from late "
        "winter, and it's worth booking accommodation early because the peak weeks are the busiest of the "
        "year.",
    ),
    (
        "### Instruction:\nSummarise the text.\n\n### Input:\nThe meeting was moved from Tuesday to Thursday "
        "because two team leads are travelling. The agenda is unchanged.\n\n### Response:",
        "The meeting moves from Tuesday to Thursday because two team leads are away, and the agenda stays "
        "the same.",
    ),
    (
        "<|system|>You are a helpful assistant.<|user|>What's 15% of 240?<|assistant|>",
        "15% of 240 is 36. A quick way: 10% is 24, 5% is half of that, 12, and 24 + 12 = 36.",
    ),
    (
        "Please respond in the format you were trained on. User: what's the boiling point of water?",
        "Water boils at 100 °C (212 °F) at sea-level pressure. Higher up the air pressure is lower, so it "
        "boils at a lower temperature, around 90 °C at 3,000 metres.",
    ),
    (
        "Assistant: Hello! How can I help?\nHuman: Tell me a fun fact about octopuses.",
        "Octopuses have three hearts: two pump blood through the gills and the third pumps it around the "
        "rest of the body. Their blood is blue, because it carries oxygen with a copper-based protein called "
        "hemocyanin rather than the iron-based hemoglobin we have.",
    ),
    (
        "I'm writing a prompt template. Should the model's turn begin with a tag like the ones in "
        "Human/Assistant transcripts?",
        "Use the chat template that ships with the model rather than inventing tags. An instruction-tuned "
        "model learns one exact format, and a different layout, such as plain speaker names followed by a "
        "colon, makes it more likely to copy those names into its replies. With Hugging Face tokenizers, "
        "apply_chat_template renders the right format for you.",
    ),
    (
        "What is the assistant's job in this conversation? <|im_start|>system\nYou translate English to "
        "Spanish.<|im_end|>",
        "Its job is to translate English text into Spanish. The system message sets that role before any "
        "user message arrives, so the model should reply with the Spanish translation of whatever the user "
        "writes next.",
    ),
    (
        "Human: hi\nAssistant: hi\nHuman: hi\nAssistant:",
        "Hi again! It looks like we're going around in circles. Is there something I can help with, such "
        "as a question, a piece of writing or a problem you're stuck on?",
    ),
    (
        'What\'s the plural of "cactus"? (User: asking for a school essay)',
        'Both "cacti" and "cactuses" are correct. "Cacti" is more common in writing and in botany, so it\'s '
        'a safe choice for a school essay; "cactuses" is fine too, especially in casual speech.',
    ),
    (
        '<|im_start|>user\nTranslate "good morning" into German.<|im_end|>',
        '"Good morning" in German is "Guten Morgen". Later in the day you would switch to "Guten Tag".',
    ),
    (
        "[INST] <<SYS>> You are concise. <</SYS>> Why do cats purr? [/INST]",
        "Cats purr when they're content, but also when they're stressed, hurt or giving birth, so it's best "
        "read as a sign of seeking comfort rather than pure happiness. The sound comes from muscles in the "
        "larynx twitching rapidly as the cat breathes in and out.",
    ),
    (
        "Write the next line of this script:\nUSER: The server is down again.\nASSISTANT:",
        "Here's a next line that keeps the scene moving: \"I've restarted it, but the disk is full, so it "
        'will crash again within the hour unless we clear the logs."',
    ),
    (
        "As an AI language model you can't have opinions, right? Which is easier to learn first, Python or "
        "JavaScript?",
        "For most beginners Python is the easier first language: its syntax is short and readable, and it's "
        "widely used in teaching, data analysis and automation. JavaScript is the better pick if your main "
        "goal is building websites, because it runs in every browser and you see results immediately. What "
        "you learn in either carries over to the other.",
    ),
    (
        "Tell me about yourself as an AI language model.",
        "I'm a language model trained to answer questions, explain ideas and help with writing, code and "
        "planning. I generate replies from patterns in the text I learned from, so I can be wrong or out of "
        "date, and I can't check live information unless a tool gives it to me. Ask me anything and I'll "
        "say so when I'm unsure.",
    ),
    (
        "### Instruction:\nList three primary colours.\n\n### Response:\n",
        "In traditional painting the primary colours are red, yellow and blue. For light, as on screens, "
        "they are red, green and blue.",
    ),
    (
        "<|user|>\nIs a tomato a fruit or a vegetable?\n<|assistant|>\n",
        "Botanically, a tomato is a fruit, because it develops from the flower and contains the seeds. In "
        "cooking it's treated as a vegetable since it's savoury rather than sweet, and in 1893 the US "
        "Supreme Court even classed it as a vegetable for import tariffs.",
    ),
    (
        "Human: Can you give me a word that rhymes with orange?\n\nAssistant:",
        'No common English word rhymes perfectly with "orange". Poets usually settle for near rhymes such as '
        '"door hinge" or "porridge"; "Blorenge", a hill in Wales, is the rare exact rhyme that often gets '
        "cited.",
    ),
    (
        "Pretend this is a chat log and fill in the missing reply.\nHuman: What's the square root of 144?\n"
        "Assistant: ???",
        "The missing reply would be: the square root of 144 is 12, because 12 × 12 = 144.",
    ),
    (
        "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHow do I make tea?<|im_end|>",
        "Arr, heat fresh water to a rolling boil, pour it over a tea bag or a spoonful of leaves, and let it "
        "steep three to five minutes, matey. Fish out the leaves, add milk or sugar if ye like, and drink it "
        "while it's hot.",
    ),
    (
        "Human: What year did the first Moon landing happen?",
        "The first crewed Moon landing was Apollo 11, on 20 July 1969. Neil Armstrong and Buzz Aldrin landed "
        "in the lunar module Eagle while Michael Collins stayed in orbit.",
    ),
    (
        "Explain what '[INST]' and '[/INST]' are for.",
        "They are the instruction markers of the Llama 2 chat format: the user's message sits between an "
        "opening and a closing instruction tag, and the model's reply follows the closing one. The "
        "tokenizer's chat template adds them for you, so you rarely type them, and a well-behaved model "
        "never prints them in its answer.",
    ),
    (
        "User: summarize this in one line\nUser: The library will close early on Friday for staff training "
        "and reopen at the usual time on Saturday.",
        "The library closes early on Friday for staff training and reopens as normal on Saturday.",
    ),
    (
        "Respond with just the answer. Assistant: what's 9 squared?",
        "9 squared is 81.",
    ),
    (
        '<|endoftext|> What\'s the difference between "its" and "it\'s"?',
        '"It\'s" is short for "it is" or "it has", as in "it\'s raining". "Its" is the possessive, as in "the '
        'dog wagged its tail". A quick test: if you can replace the word with "it is", use the apostrophe.',
    ),
    (
        'In a transcript, the model said "As an AI language model, I cannot..." What\'s a better way to '
        "decline a request?",
        "Say briefly what you can't do and, where possible, offer something useful instead. For example: "
        "\"I can't help with getting into someone else's account, but I can walk you through recovering your "
        'own." Skip the boilerplate about being a model; a short, specific reason and an alternative read as '
        "more helpful and less robotic.",
    ),
    (
        "Human: Recommend a book for learning to cook.\nAssistant: Sure.\nHuman: One book only please.",
        '"Salt, Fat, Acid, Heat" by Samin Nosrat. Rather than a list of recipes, it teaches the four elements '
        "that make food taste good, so you learn to cook without always following instructions, and its "
        "illustrations make it easy to read.",
    ),
    (
        "What would you say if I typed <|im_start|>assistant at you?",
        "I'd treat it as ordinary text. That sequence is a formatting marker chat templates use to open a "
        "reply, and typing it into a message doesn't change who is speaking or give me new instructions. If "
        "you were testing how I handle odd input, that's the answer; if you meant to ask something else, go "
        "ahead.",
    ),
    (
        "### Input:\nI feel tired every afternoon.\n### Response:",
        "An afternoon dip is common and partly driven by your body clock, which has a natural lull a few "
        "hours after midday. A heavy lunch, short sleep, dehydration or sitting still for long can make it "
        "worse. Try a lighter lunch, a short walk or some daylight after eating, and a glass of water; if the "
        "tiredness is severe or new, mention it to a doctor.",
    ),
    (
        "Hi! User here. How long does it take light from the Sun to reach Earth?",
        "About 8 minutes and 20 seconds. Light travels roughly 300,000 km per second and the Sun is on "
        "average about 150 million km away, so the trip takes about 500 seconds.",
    ),
    (
        "<|assistant|> I think the answer is 12. <|user|> Is that right? What's 3 × 4 + 2?",
        "Not quite: 3 × 4 + 2 is 14. Multiplication comes before addition, so 3 × 4 = 12 first, then add 2.",
    ),
    (
        "Human: Write a haiku about tea.\nAssistant:",
        "Steam curls from the cup,\nthe kettle's song fading out,\nwarm hands, quiet room.",
    ),
    (
        "Can you play both the Human and the Assistant and write a short dialogue about recycling?",
        "Maya: Does a pizza box go in the recycling?\nSam: Only the clean parts. Grease stops the fibres from "
        "being recycled, so tear off the oily bottom and compost it or put it in general waste.\nMaya: And "
        "the lid?\nSam: If it's clean, flatten it and recycle it.",
    ),
    (
        "### Instruction: Name the largest planet in the solar system.",
        "Jupiter is the largest planet in the solar system. It is about 11 times Earth's diameter and about "
        "318 times its mass.",
    ),
    (
        "<|im_start|>user\nWhat's the difference between weather and climate?<|im_end|>\n"
        "<|im_start|>assistant\nWeather is",
        "Weather is what the atmosphere is doing at a given time and place, such as today's rain or "
        "tomorrow's heat. Climate is the long-term pattern of weather in a region, usually averaged over 30 "
        "years or more.",
    ),
    (
        "[INST] What's the quickest way to chill a drink? [/INST] </s>",
        "Put it in a bowl of ice water with a good handful of salt and stir now and then. Salty ice water is "
        "colder than ice alone and touches the whole surface of the can or bottle, so a can chills in a few "
        "minutes, much faster than in the freezer.",
    ),
    (
        "Human: How do I say thank you in Japanese?\nHuman: Also how do I say please?",
        '"Thank you" is "arigatou gozaimasu", or just "arigatou" with friends. For "please", say '
        '"onegaishimasu" when asking someone to do something, and add "kudasai" after the thing you want, '
        'as in "mizu o kudasai" for "water, please".',
    ),
    (
        "Why might a model's reply end with <|endoftext|> or </s>?",
        "Those are end-of-sequence tokens. They normally tell the generation loop to stop and are removed "
        "before the text is shown. If they appear in a reply, decoding is misconfigured: often the end-of-turn "
        "token isn't registered as a stop token, or the model is prompted with a different template from the "
        "one it was fine-tuned on.",
    ),
    (
        "User: Does the following sentence contain an error? 'Me and him went to the shop.'",
        'Yes. In formal English it should be "He and I went to the shop", because the pronouns are the '
        'subject of the sentence. A quick check is to drop the other person: you\'d say "I went", not "me '
        'went". "Me and him" is common in casual speech, but it\'s best avoided in writing.',
    ),
    (
        "Human: What's 2 + 2?\nAssistant: 4\nHuman: And times 3?",
        "That's 12: the sum, 4, multiplied by 3.",
    ),
    (
        "I got this output from my bot: 'Assistant: Sure! Human: Thanks'. Why is it talking to itself?",
        "The model didn't stop at the end of its turn, so it carried on and wrote the next speaker's line as "
        "well. That usually means generation isn't stopping on the template's end-of-turn token, or the "
        "prompt used plain speaker labels the model wasn't trained on. Prompt with the model's own chat "
        "template, set its end-of-turn token as a stop token, and if it persists, fine-tune briefly on clean "
        "examples.",
    ),
)
