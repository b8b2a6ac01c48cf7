"""Tiny GLUE / SNLI / SciTail directories with the real files' names, headers and label spellings."""

import os

MNLI_TRAIN = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
              "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
            "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
SNLI_TRAIN = ("index\tcaptionID\tpairID\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
              "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
SNLI_DEV = ("index\tcaptionID\tpairID\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
            "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
SNLI_ORIGINAL = ("gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t"
                 "sentence1\tsentence2\tcaptionID\tpairID\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5")


def _mnli_row(i, s1, s2, gold, dev=False):
    votes = [gold] * (5 if dev else 1)
    return [str(i), "31193", f"{i}n", "government", "( ( x ) )", "( ( y ) )", "(ROOT x)", "(ROOT y)", s1, s2, *votes, gold]


def _snli_row(i, s1, s2, gold, dev=False):
    votes = [gold if gold != "-" else "neutral"] * (5 if dev else 1)
    return [str(i), "3416050480.jpg#4", f"3416050480.jpg#4r1{i}", "( x )", "( y )", "(ROOT x)", "(ROOT y)", s1, s2, *votes, gold]


# name -> (folder, {file: (header or None, rows)}, expected labels per split, is pair task)
FIXTURES = {
    "cola": ("CoLA", {
        "train.tsv": (None, [["gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."],
                             ["gj04", "0", "*", "They drank the pub."],
                             ["gj04", "1", "", "The sailors rode the breeze clear of the rocks."]]),
        "dev.tsv": (None, [["gj04", "0", "*", "The more we study verbs, the crazier they get they."],
                           ["gj04", "1", "", "Day by day the facts are getting murkier."]]),
    }, {"train": [1, 0, 1], "dev": [0, 1]}, False),
    "sst2": ("SST-2", {
        "train.tsv": ("sentence\tlabel", [["hide new secretions from the parental units ", "0"],
                                          ["that loves its characters and communicates something rather beautiful ", "1"]]),
        "dev.tsv": ("sentence\tlabel", [["it 's a charming and often affecting journey . ", "1"],
                                        ["unflinchingly bleak and desperate ", "0"]]),
    }, {"train": [0, 1], "dev": [1, 0]}, False),
    "mrpc": ("MRPC", {
        "train.tsv": ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", [
            ["1", "702876", "702977", 'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .',
             'Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .'],
            ["0", "2108705", "2108831", "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
             "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion in 1998 ."]]),
        "dev.tsv": ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", [
            ["1", "1355540", "1355592", "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
             '" The foodservice pie business does not fit our long-term growth strategy .'],
            ["0", "2029631", "2029565", "Magnarelli said Racicot hated the Iraqi regime and looked forward to using his long years of training in the war .",
             "His wife said he was \" 100 percent behind George Bush \" and looked forward to using his years of training in the war ."]]),
    }, {"train": [1, 0], "dev": [1, 0]}, True),
    "stsb": ("STS-B", {
        "train.tsv": ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore", [
            ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.", "An air plane is taking off.", "5.000"],
            ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a large flute.", "A man is playing a flute.", "3.800"]]),
        "dev.tsv": ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore", [
            ["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none", "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", "5.000"],
            ["1", "main-captions", "MSRvid", "2012test", "0002", "none", "none", "A young child is riding a horse.", "A child is riding a horse.", "4.750"],
            ["2", "main-captions", "MSRvid", "2012test", "0003", "none", "none", "A man is feeding a mouse to a snake.", "The man is playing the guitar.", "0.500"]]),
    }, {"train": [5.0, 3.8], "dev": [5.0, 4.75, 0.5]}, True),
    "qqp": ("QQP", {
        "train.tsv": ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", [
            ["133273", "213221", "213222", "How is the life of a math student? Could you describe your own experiences?",
             "Which level of prepration is enough for the exam jlpt5?", "0"],
            ["402555", "536040"],  # a broken row, as in the real train.tsv: skipped with a warning
            ["360472", "364011", "490273", "What are the best ways to learn French?", "How do I learn french genders?", "1"]]),
        "dev.tsv": ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", [
            ["201359", "303345", "303346", "Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", "0"],
            ["263843", "69383", "380476", "I want to pursue PhD in Computer Science about social network,what is the open problem in social networks?",
             "I handle social media for a non-profit. Should I start going to social media networking events? Are there any good ones in the bay area?", "1"]]),
    }, {"train": [0, 1], "dev": [0, 1]}, True),
    "mnli": ("MNLI", {
        "train.tsv": (MNLI_TRAIN, [
            _mnli_row(0, "Conceptually cream skimming has two basic dimensions - product and geography.",
                      "Product and geography are what make cream skimming work. ", "neutral"),
            _mnli_row(1, "you know during the season and i guess at at your level uh you lose them to the next level",
                      "You lose the things to the following level if the people recall.", "entailment"),
            _mnli_row(2, "One of our number will carry out your instructions minutely.",
                      "A member of my team will execute your orders with immense precision.", "contradiction")]),
        "dev_matched.tsv": (MNLI_DEV, [
            _mnli_row(0, "The new rights are nice enough", "Everyone really likes the newest benefits ", "neutral", dev=True),
            _mnli_row(1, "This site includes a list of all award winners.", "The Government Executive articles housed on the website are not able to be searched.", "contradiction", dev=True)]),
        "dev_mismatched.tsv": (MNLI_DEV, [
            _mnli_row(0, "Your contribution helped make it possible for us to provide our students with a quality education.",
                      "Your contributions were of no help with our students' education.", "contradiction", dev=True),
            _mnli_row(1, "The answer has nothing to do with their cause.", "The answer is unrelated to the cause.", "entailment", dev=True),
            _mnli_row(2, "Beside the fountain is the Museum.", "The museum is beside the fountain.", "entailment", dev=True)]),
    }, {"train": [1, 0, 2], "dev": [1, 2]}, True),
    "qnli": ("QNLI", {
        "train.tsv": ("index\tquestion\tsentence\tlabel", [
            ["0", "When did the third Digimon series begin?", "Unlike the two seasons before it and most of the seasons that followed, Digimon Tamers takes a darker and more realistic approach to its story featuring Digimon who do not reincarnate after their deaths and more complex character development in the original Japanese.", "not_entailment"],
            ["1", "Which missile batteries often have individual launchers several kilometres from one another?", "When MANPADS is operated by specialists, batteries may have several dozen teams deploying separately in small sections; self-propelled air defence guns may deploy in pairs.", "not_entailment"],
            ["2", "What two things does Popper argue Tarski's theory involves in an evaluation of truth?", "He bases this interpretation on the fact that examples such as the one described above refer to two things: assertions and the facts to which they refer.", "entailment"]]),
        "dev.tsv": ("index\tquestion\tsentence\tlabel", [
            ["0", "What came into force after the new constitution was herald?", "As of that day, the new constitution heralding the Second Republic came into force.", "entailment"],
            ["1", "What is the first major city in the stream of the Rhine?", "The most important tributaries in this area are the Ill below of Strasbourg, the Neckar in Mannheim and the Main across from Mainz.", "not_entailment"]]),
    }, {"train": [1, 1, 0], "dev": [0, 1]}, True),
    "rte": ("RTE", {
        "train.tsv": ("index\tsentence1\tsentence2\tlabel", [
            ["0", "No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.", "not_entailment"],
            ["1", "A place of sorrow, after Pope John Paul II died, became a place of celebration, as Roman Catholic faithful gathered in downtown Chicago to mark the installation of new Pope Benedict XVI.", "Pope Benedict XVI is the new leader of the Roman Catholic Church.", "entailment"]]),
        "dev.tsv": ("index\tsentence1\tsentence2\tlabel", [
            ["0", "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according to the Christopher Reeve Foundation.", "Christopher Reeve had an accident.", "not_entailment"],
            ["1", "Yet, we now are discovering that antibiotics are losing their effectiveness against illness.", "Bacteria is winning the war against antibiotics.", "entailment"]]),
    }, {"train": [1, 0], "dev": [1, 0]}, True),
    "snli": ("SNLI", {
        "train.tsv": (SNLI_TRAIN, [
            _snli_row(0, "A person on a horse jumps over a broken down airplane.", "A person is training his horse for a competition.", "neutral"),
            _snli_row(1, "A person on a horse jumps over a broken down airplane.", "A person is at a diner, ordering an omelette.", "contradiction"),
            _snli_row(2, "Two women are embracing while holding to go packages.", "The sisters are hugging goodbye.", "-"),
            _snli_row(3, "A person on a horse jumps over a broken down airplane.", "A person is outdoors, on a horse.", "entailment")]),
        "dev.tsv": (SNLI_DEV, [
            _snli_row(0, "Two women are embracing while holding to go packages.", "Two woman are holding packages.", "entailment", dev=True),
            _snli_row(1, "Two young children in blue jerseys.", "Two kids in jackets walk to school.", "contradiction", dev=True)]),
    }, {"train": [1, 2, 0], "dev": [0, 2]}, True),
    "scitail": ("SciTailV1.1", {
        "tsv_format/scitail_1.0_train.tsv": (None, [
            ["Pluto rotates once on its axis every 6.39 Earth days;", "Earth rotates on its axis once times in one day.", "neutral"],
            ["Glenn stood up, and the cerebellum, which governs balance, held him upright.", "The cerebellum is responsible for balance.", "entails"]]),
        "tsv_format/scitail_1.0_dev.tsv": (None, [
            ["Based on the list provided of the uses of substances 1-7, estimate the pH of each unknown.", "If a substance has a ph value greater than 7,that indicates that it is base.", "neutral"],
            ["A solution is a homogeneous mixture of two or more substances.", "Solution is the term for a homogeneous mixture of two or more substances.", "entails"]]),
    }, {"train": [1, 0], "dev": [1, 0]}, True),
}

# (num_labels, primary metric, reported metrics, label names, dropout)
EXPECTED = {
    "cola": (2, "mcc", ("mcc",), ("unacceptable", "acceptable"), 0.05),
    "sst2": (2, "accuracy", ("accuracy",), ("negative", "positive"), 0.1),
    "mrpc": (2, "accuracy_f1", ("accuracy", "f1"), ("not_equivalent", "equivalent"), 0.1),
    "stsb": (1, "pearson_spearman", ("pearson", "spearman"), None, 0.1),
    "qqp": (2, "accuracy_f1", ("accuracy", "f1"), ("not_duplicate", "duplicate"), 0.1),
    "mnli": (3, "accuracy", ("accuracy",), ("entailment", "neutral", "contradiction"), 0.3),
    "qnli": (2, "accuracy", ("accuracy",), ("entailment", "not_entailment"), 0.1),
    "rte": (2, "accuracy", ("accuracy",), ("entailment", "not_entailment"), 0.1),
    "snli": (3, "accuracy", ("accuracy",), ("entailment", "neutral", "contradiction"), 0.1),
    "scitail": (2, "accuracy", ("accuracy",), ("entails", "neutral"), 0.1),
}


def write_table(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        if header is not None:
            f.write(header + "\n")
        for row in rows:
            f.write("\t".join(row) + "\n")


def write_task(root, name, folder=None):
    """Writes FIXTURES[name] under root/<folder>; returns that folder."""
    default_folder, files, _, _ = FIXTURES[name]
    task_dir = os.path.join(root, folder or default_folder)
    for file, (header, rows) in files.items():
        write_table(os.path.join(task_dir, file), header, rows)
    return task_dir


def write_glue(root):
    for name in FIXTURES:
        write_task(root, name)
    return root
